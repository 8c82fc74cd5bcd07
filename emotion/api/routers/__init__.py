"""The API's endpoints, one module per topic; create_app puts photos, videos and the model under /v1."""
