"""Every file name a preset can hold, as the libraries that write them spell them.

Names only: reading and writing live in files.py, and which component reads which file in
the format loaders (keras_format, transformers_format, native_format,
sentence_transformers_format). Paths inside a preset are POSIX paths relative to its root.
"""

CONFIG_FILE = "config.json"

# -- Keras presets (keras_hub's save_to_preset) -------------------------------------------------
KERAS_METADATA_FILE = "metadata.json"
KERAS_WEIGHTS_FILE = "model.weights.h5"
KERAS_WEIGHTS_INDEX = "model.weights.json"  # sharded: names model_NNNNN.weights.h5 files
KERAS_TOKENIZER_FILE = "tokenizer.json"
KERAS_PREPROCESSOR_FILE = "preprocessor.json"
KERAS_TASK_FILE = "task.json"
KERAS_TASK_WEIGHTS_FILE = "task.weights.h5"
KERAS_TOKENIZER_ASSETS = "assets/tokenizer"
KERAS_VOCABULARY_JSON = KERAS_TOKENIZER_ASSETS + "/vocabulary.json"
KERAS_MERGES = KERAS_TOKENIZER_ASSETS + "/merges.txt"
KERAS_VOCABULARY_SPM = KERAS_TOKENIZER_ASSETS + "/vocabulary.spm"

# -- transformers checkpoints (save_pretrained) -------------------------------------------------
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_FILE = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"
HF_TOKENIZER_FILE = "tokenizer.json"  # the same name as Keras's, another content
HF_TOKENIZER_CONFIG = "tokenizer_config.json"
HF_SPECIAL_TOKENS_MAP = "special_tokens_map.json"
HF_VOCAB_JSON = "vocab.json"
HF_MERGES = "merges.txt"
HF_SENTENCEPIECE = "sentencepiece.bpe.model"

# -- roberta_torch's own export (config.json + model.safetensors) -------------------------------
NATIVE_WEIGHTS_FILE = SAFETENSORS_FILE

# Every tokenizer file either layout can hold (RoBERTa's and XLM-R's).
TOKENIZER_FILES = (
    KERAS_TOKENIZER_FILE,
    KERAS_VOCABULARY_JSON,
    KERAS_MERGES,
    KERAS_VOCABULARY_SPM,
    HF_TOKENIZER_CONFIG,
    HF_SPECIAL_TOKENS_MAP,
    HF_VOCAB_JSON,
    HF_MERGES,
    HF_SENTENCEPIECE,
)

# -- sentence-transformers directories (SentenceTransformer.save) --------------------------------
ST_MODULES_FILE = "modules.json"
ST_SENTENCE_BERT_CONFIG = "sentence_bert_config.json"  # in the Transformer module's folder
ST_CONFIG_FILE = "config_sentence_transformers.json"
ST_MODULE_CONFIG = "config.json"  # a Pooling / Normalize module's own config, in its folder
ST_POOLING_PATH = "1_Pooling"  # where sentence-transformers writes the Pooling module
ST_NORMALIZE_PATH = "2_Normalize"

# -- bge-m3's extra heads (FlagEmbedding), next to the encoder ------------------------------------
BGE_M3_HEADS = ("sparse_linear", "colbert_linear")
BGE_M3_SAFETENSORS = "{head}.safetensors"  # what roberta_torch writes and reads first
BGE_M3_PICKLE = "{head}.pt"  # what FlagEmbedding writes and reads (a torch.save'd state dict)
