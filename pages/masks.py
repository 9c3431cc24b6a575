import streamlit as st

st.title("masks")
st.info("This page is being built.")
