"""The ports: the narrow protocols the services use to reach Graph, Table Storage and
Storage queues, with their semantics in docstrings. Pure; the adapters implement them.
"""
