"""Agents: named, tool-using assistants whose every model call goes through the gateway's pipeline."""
