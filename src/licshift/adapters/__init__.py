"""The adapters: the only code that talks to Microsoft Graph (msgraph-sdk), Table Storage
and Storage queues. Tested against the real thing (the Graph simulator over HTTP, Azurite).
"""
