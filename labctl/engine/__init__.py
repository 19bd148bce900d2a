"""One container-engine wrapper (docker or podman): builds, runs, labels and names, and the netfilter
fence around a run's networks."""
