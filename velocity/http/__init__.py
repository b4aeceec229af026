"""HTTP over Velocity (spec section 18): one HTTP/1.1 exchange per client-initiated
bidirectional stream, parsed and written with h11; the static file server and JSON API."""
