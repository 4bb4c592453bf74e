"""twemproxy-compatible proxy: key hashing and distribution."""
