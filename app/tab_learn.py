"""The Learn tab: the ideas on one page, next to two live widgets."""

from __future__ import annotations

import gradio as gr

from .learn import TEXT, calculator, every_configuration, results_markdown, toy_figure

LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]


def build() -> None:
    """Lay out and wire the Learn tab (call inside ``gr.Tab``); it needs no server state."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            gr.Markdown(TEXT, latex_delimiters=LATEX, elem_id="learn-text")
            gr.Markdown("### So is SymLoRA any good? Our measurements\n" + results_markdown(), elem_id="learn-results")
            every = every_configuration()
            if every:
                with gr.Accordion("Every configuration (mean ± std over seeds)", open=False, elem_id="learn-every"):
                    gr.Markdown(every, elem_id="learn-every-table")
        with gr.Column(scale=2):
            gr.Markdown("### Parameter calculator\nHow many weights does an adapter need?")
            with gr.Row():
                n_in = gr.Number(192, precision=0, minimum=1, label="in", info="Layer input size")
                n_out = gr.Number(576, precision=0, minimum=1, label="out", info="Layer output size")
            with gr.Row():
                r = gr.Slider(1, 64, value=8, step=1, label="rank r", info="Directions per adapter")
                layers = gr.Number(6, precision=0, minimum=1, label="layers", info="How many such layers")
            table = gr.Markdown(calculator(192, 576, 8, 6), elem_id="calc-table", latex_delimiters=LATEX)
            gr.Markdown("### Build a ΔW yourself\nThree directions (r = 3) in a 12 × 12 layer. "
                        "Move the three λ and watch ΔW = Q·diag(Λ)·Qᵀ.")
            l1 = gr.Slider(-2, 2, value=1.0, step=0.05, label="λ₁", info="Stretch (+) or flip (−) direction 1")
            l2 = gr.Slider(-2, 2, value=-0.5, step=0.05, label="λ₂", info="… direction 2")
            l3 = gr.Slider(-2, 2, value=0.0, step=0.05, label="λ₃", info="… direction 3 (0 = unused)")
            with gr.Row():
                ortho = gr.Checkbox(False, label="Orthonormal Q", info="Then the eigenvalues of ΔW equal Λ exactly")
                seed = gr.Number(0, precision=0, label="Q seed", info="Another random Q")
            fig0, cap0 = toy_figure(1.0, -0.5, 0.0, False, 0)
            plot = gr.Plot(fig0, show_label=False, elem_id="toy-plot")
            caption = gr.Markdown(cap0, elem_id="toy-caption")
    light = dict(api_visibility="private", show_progress="hidden", queue=False)
    for comp in (n_in, n_out, layers):
        comp.change(calculator, [n_in, n_out, r, layers], table, **light)
    r.change(calculator, [n_in, n_out, r, layers], table, **light)
    for comp in (l1, l2, l3):
        comp.release(toy_figure, [l1, l2, l3, ortho, seed], [plot, caption], **light)
    for comp in (ortho, seed):
        comp.change(toy_figure, [l1, l2, l3, ortho, seed], [plot, caption], **light)
