// The pause image's one binary for the real nodes' pod sandboxes (devenv/realnodes.py).
module statefulset-migrator/devenv/pause

go 1.24.0
