"""SymLoRA Lab: a Gradio app to fine-tune pretrained models live with LoRA or SymLoRA.

    python -m app            # or: symlora-lab --host 0.0.0.0 --port 7860

``app.ui.build_demo()`` builds the page; all training goes through the ``symlora`` core.
"""

__all__ = ["build_demo"]


def build_demo(*args, **kwargs):
    """Build the Gradio app (imported lazily: ``import app`` stays cheap)."""
    from .ui import build_demo as build

    return build(*args, **kwargs)
