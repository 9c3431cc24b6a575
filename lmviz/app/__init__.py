"""The app's shared widgets and exports (Streamlit lives here and in app_pages/, nowhere else)."""
