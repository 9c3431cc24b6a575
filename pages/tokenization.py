import streamlit as st

st.title("tokenization")
st.info("This page is being built.")
