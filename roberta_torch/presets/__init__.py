"""Presets: where weights come from (registry, resolve), how they are read and written
(keras_format, transformers_format, safetensors_format), and the two entry points the
backbone delegates to (loading.backbone_from_preset, saving.save_preset).

Nothing here is imported by `import roberta_torch`; the backbone imports these modules
lazily, and they import their optional clients (h5py, safetensors, kagglehub,
huggingface_hub) only inside the functions that need them.
"""
