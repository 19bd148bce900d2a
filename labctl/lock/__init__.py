"""Everything that pins or fetches: lab.lock and its resolvers (Hugging Face hub, git, PyPI sdists and
packages, image registries, tree hashes) and the model downloads."""
