"""The `huatuo` command: the top layer, composing the gateway and the adapters."""
