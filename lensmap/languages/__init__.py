"""Languages: the vocabulary language map and language identification of text.

* :func:`build_vocabulary_map` labels every token id of a model with a language (fastText
  lid.176, Unicode-script rules, CLDR lexicons for fragments) and gives the
  ``[vocab_size, n_columns]`` weight matrix that turns next-token probabilities into
  per-language mass.
* :func:`identify` names the language of a string with the bundled lid.176 model.
"""

from lensmap.languages.lexicon import Lexicon, build_lexicons, lexicon_weights
from lensmap.languages.lid import (
    identify,
    lid_languages,
    lid_model_path,
    load_lid_model,
    validate_languages,
)
from lensmap.languages.tokens import DecodedVocabulary, decode_vocabulary, detect_scheme
from lensmap.languages.vocab_map import (
    EXTRA_BUCKETS,
    METHODS,
    VocabularyMap,
    build_vocabulary_map,
)

__all__ = [
    "EXTRA_BUCKETS",
    "METHODS",
    "DecodedVocabulary",
    "Lexicon",
    "VocabularyMap",
    "build_lexicons",
    "build_vocabulary_map",
    "decode_vocabulary",
    "detect_scheme",
    "identify",
    "lexicon_weights",
    "lid_languages",
    "lid_model_path",
    "load_lid_model",
    "validate_languages",
]
