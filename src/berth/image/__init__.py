"""Images: references, registry client, content store, layer apply, image store.

Public modules (import them directly; nothing registers itself on import):

    reference   parse_reference(), Reference (Docker's normalization)
    digest      parse/validate "sha256:<hex>" and "sha512:<hex>", streaming Digester
    mediatypes  OCI and Docker media type constants
    content     ContentStore: blobs/<alg>/<hex> plus a resumable ingest area
    auth        Docker config.json credentials, WWW-Authenticate, token cache
    platforms   os/arch/variant parsing, the host's platform, index resolution
    manifests   Descriptor, manifest validation (size cap, media type, digest)
    registry    RegistryClient: pull and push over the OCI distribution API
    compression, layers   layer (de)compression and apply (whiteouts)
    store       Stores (a data root), ImageStore (records, names, inspect, gc), ImageRecord
    pull        pull(ref, store_root=...) -> ImageRecord: download, verify, unpack in one pass
    push        push(image, ref, store_root=...) -> manifest digest
    archive     save / load (docker save and OCI layout tars), import_oci_layout, import_rootfs
    changes     ``docker import --change`` instructions applied to a config
"""
