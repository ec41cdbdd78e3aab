from django.apps import AppConfig


class ClientCoreConfig(AppConfig):
    name = "clientcore"
    verbose_name = "Client core"
