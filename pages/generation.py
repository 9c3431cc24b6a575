import streamlit as st

st.title("generation")
st.info("This page is being built.")
