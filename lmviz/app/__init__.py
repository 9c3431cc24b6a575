"""The app's shared widgets and exports (Streamlit lives here and in pages/, nowhere else)."""
