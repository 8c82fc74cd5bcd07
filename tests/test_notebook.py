import nbformat
from nbclient import NotebookClient

from tests.conftest import REPO


def test_training_notebook_executes_on_a_tiny_setting(monkeypatch, tmp_path, face_data_dir):
    (tmp_path / "ferplus").symlink_to(face_data_dir)  # the notebook reads $EMOTION_DATA/ferplus
    monkeypatch.setenv("EMOTION_DATA", str(tmp_path))
    monkeypatch.setenv("NOTEBOOK_LIMIT", "200")
    monkeypatch.setenv("NOTEBOOK_EPOCHS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(REPO / "notebooks" / "training.ipynb", as_version=4)
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(REPO / "notebooks")}},
    ).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    text = "".join(output.get("text", "") for output in outputs)
    assert "on 200 val faces" in text
