"""The Streamlit page's parts: `context` (the sidebar, cached resources), one module per tab
(`photo`, `webcam`, `video`, `history`), `charts` and `widgets`, and the webcam's `ice` servers
and video `encoder`s. app.py puts them together; the engine they call is the `emotion` package,
which knows nothing of Streamlit."""
