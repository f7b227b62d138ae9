"""The testbed's node agent: a kubelet stand-in that runs pods as local processes."""
