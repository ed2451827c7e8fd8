"""Remote sessions: the state machine from request to end, and the rules that gate it."""
