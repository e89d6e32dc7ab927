"""Agent requests (SPEC section 6): the outbound files read without following links (files),
validated (requests), authorised and acted on once (handler), watched fairly (watcher,
quota), and what crosses the wall: exports and staged files."""
