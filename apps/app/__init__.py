"""The Streamlit app over a workspace: `loom app WORKSPACE` (script: apps/app/main.py)."""
