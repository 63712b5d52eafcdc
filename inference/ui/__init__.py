"""The Gradio UI: the Predict, Training and Models tabs (``blocks``, ``training``)."""
