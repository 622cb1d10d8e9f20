"""Data: manifests, audio I/O, noise, augmentation, batching, collation and the data module.

Import the submodules directly (``from whisper_flamingo.data.manifest import load_split``); this
package file stays light so that importing one piece does not pull in Lightning.
"""
