// Streamlit's custom-component protocol (components v1), spoken directly over postMessage.
const send = (type, data = {}) => window.parent.postMessage({ isStreamlitMessage: true, type, ...data }, "*");

export function onRender(callback) {
  window.addEventListener("message", (event) => {
    if (event.data && event.data.type === "streamlit:render") callback(event.data.args || {});
  });
  send("streamlit:componentReady", { apiVersion: 1 });
}

export const setFrameHeight = (height) => send("streamlit:setFrameHeight", { height });
export const setComponentValue = (value) => send("streamlit:setComponentValue", { value, dataType: "json" });
