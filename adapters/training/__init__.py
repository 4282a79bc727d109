"""One-stage medical adaptation (HuatuoGPT-II): data readers, unification, priority sampling,
packing, training and export to a checkpoint `huatuo serve` loads as is."""
