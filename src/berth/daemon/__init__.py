"""Layer 4: ``berthd``, the daemon: the Docker Engine API over a unix socket, the
containers, images, networks and volumes services, the metadata DB and the shim manager."""
