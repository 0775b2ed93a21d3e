"""The Learn tab's text: the ideas behind LoRA and SymLoRA, in Markdown with LaTeX."""

TEXT = r"""
## 1 · Fine-tuning without touching the weights: LoRA

A layer of a pretrained network computes $y = W x$ with a big matrix $W$ (out × in).
Full fine-tuning learns a whole new $W$. **LoRA** freezes $W$ and learns a *low-rank update*:

$$y = W x + s\,B A\,x, \qquad A \in \mathbb{R}^{r \times \text{in}},\; B \in \mathbb{R}^{\text{out} \times r}$$

Only $A$ and $B$ are trained: $r\cdot(\text{in} + \text{out})$ numbers, i.e. **$2\,n\,r$** for a square
$n \times n$ layer. With $n = 192$ and $r = 8$ that is 3,072 numbers instead of 36,864.

## 2 · SymLoRA: one matrix instead of two

**SymLoRA** (Panoutsos, Santos & Figueiredo, *Towards Symmetric Low-Rank Adapters*,
[arXiv 2504.03719](https://arxiv.org/abs/2504.03719)) writes the update of a square layer as a
*spectral decomposition*:

$$\Delta W = s\,Q\,\mathrm{diag}(\Lambda)\,Q^\top, \qquad Q \in \mathbb{R}^{n \times r},\; \Lambda \in \mathbb{R}^{r}$$

The same $Q$ appears on both sides, so it costs **$n\,r + r$** numbers: about **half** of LoRA's
$2\,n\,r$. The paper reports negligible losses in downstream quality for this saving; our own
measurements at the bottom of this page, with each method at its own best learning rate, agree
for the vision transformer, the language model and the sentence encoder; on a few-shot task with
80 training images SymLoRA trails by 0.6–2 points, within the spread between seeds. On the CNN,
whose 1×1 convolutions are rectangular (SymLoRA puts independent symmetric blocks on them), it
trails by 1–4.5 points: a measured loss, largest at the preset's short schedule.

## 3 · Why "symmetric"?

$Q\,\mathrm{diag}(\Lambda)\,Q^\top$ equals its own transpose: $\Delta W$ is a **symmetric** matrix.
A symmetric matrix has real eigenvalues and perpendicular eigen-directions, so the update
simply **stretches** ($\lambda > 0$) or **shrinks / flips** ($\lambda < 0$) the layer's input along
$r$ directions. That is what the **Λ spectrum** plot on the Train tab shows while you train:
the signed eigenvalues of each layer's $\Delta W$ (computed exactly; because $Q$ is not
orthonormal they are not simply $\Lambda$ — try the widget below).

Every matrix is a symmetric part plus an antisymmetric part. SymLoRA can only learn the
symmetric part; for LoRA runs the Train tab measures how much of the learned update is
symmetric (its *symmetric fraction*: 1 = fully symmetric, about 0.5 = like a random matrix).

## 4 · Why square — and our block rule

Only a square matrix can be symmetric, but many layers are rectangular: a ViT's fused
`qkv` maps $d \to 3d$, its MLP maps $d \to 4d \to d$. **This lab's rule** (an extension, not
from the paper): when one side is a whole multiple $k$ of the other, the layer is split into
$k$ square $n \times n$ blocks, each with its own $Q_b, \Lambda_b$ — **$k\,(n\,r + r)$** numbers,
where LoRA needs $r\,(n + k\,n)$. Layers whose sides are not multiples can only use LoRA.

## 5 · The scale $s = \alpha / r$

The update is multiplied by $s = \alpha / r$ (`lora_alpha / r`, as in PEFT), so changing the
rank does not change how big the update starts out; rank-stabilised LoRA uses $\alpha / \sqrt r$.

## 6 · Starting at exactly the pretrained model

$\Lambda$ starts at **zero**, so $\Delta W = 0$ and step 0 *is* the pretrained model. $Q$ starts
random: if $Q$ were zero too, no gradient could ever move it (a saddle point). LoRA does the
same with $B = 0$.

## 7 · Merging: free at inference

After training, $W' = W + \Delta W$ is a single matrix of the original shape: the merged model
runs **exactly as fast as the base model**, and un-merging subtracts $\Delta W$ again. The Try
tab checks both. Since $s\,Q\,\mathrm{diag}(\Lambda)\,Q^\top = (s\,Q\,\mathrm{diag}(\Lambda))\,Q^\top$,
a SymLoRA adapter is also a plain LoRA with $B = s\,Q\,\mathrm{diag}(\Lambda)$ and $A = Q^\top$ —
that is the PEFT export you can download.
"""
