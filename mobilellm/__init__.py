"""mobilellm: MobileLLM models to phone-deployable artifacts, verified and benchmarked."""
__version__ = "0.1.0"
