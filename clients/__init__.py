"""Clients of the ReSearch server: ``research ask`` and LangChain integrations."""
