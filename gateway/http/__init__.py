"""The HTTP edge: OpenAI error envelopes, request ids, the shape of request bodies, the endpoints, the stream
relay, client connections and the door that sheds excess load."""
