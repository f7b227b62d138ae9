"""Build-time generators, kept out of the operator's runtime package: the VoiceAgent CRD
(`crds/voiceagent.yaml`) and its field reference (`docs/voiceagent.md`), from the limits
the operator's spec parser and the contract already state. `python -m crdgen` prints the
CRD, `python -m crdgen --docs` the reference."""
