"""Feature attributions: gradients, integrated and expected gradients, SmoothGrad,
occlusion, permutation importance.

Each gradient method is one jitted program over the whole batch: ``vmap`` of ``grad`` of a
per-example scalar (the chosen output of the model on that example). ``predict_fn`` is a
pure function ``x [B, ...] -> outputs [B, K]`` (or ``[B]``), e.g. the raw model outputs of a
trained run in eval mode::

    predict_fn = functools.partial(trainer.programs.outputs, state)   # logits
    attributions = jdl.explain.integrated_gradients(predict_fn, x)      # [B, ...] like x
    attributions.sum(axis=1)       # ~ f(x) - f(baseline) per example (completeness)

Attributions are for the *logits* (raw outputs) by default: attributions of probabilities
saturate where the model is confident. ``probabilities=True`` explains ``link(outputs)``
instead (the given ``link``, e.g. ``trainer.loss.link``; by default sigmoid for one output,
softmax for several). Calling again with the same ``predict_fn`` and shapes does not
recompile; a ``functools.partial(fn, state)`` passes ``state`` into the compiled program as
an argument (not baked-in constants), so a new state does not recompile either.

One module per family: :mod:`~jaxdl.explain.gradients` (saliency, gradient x input),
:mod:`~jaxdl.explain.integrated` (integrated gradients, its gap, ``steps="auto"``),
:mod:`~jaxdl.explain.expected` (expected gradients / GradientSHAP),
:mod:`~jaxdl.explain.noise` (SmoothGrad over any gradient method),
:mod:`~jaxdl.explain.occlusion`, :mod:`~jaxdl.explain.permutation`;
:func:`attribute` runs any of them and returns what was explained with the attributions.
A run folder is explained by :mod:`jaxdl.experiment.explain_run` (``jaxdl explain``).
"""

from jaxdl.explain.attribute import COMPLETE, METHODS, Explanation, attribute
from jaxdl.explain.expected import expected_gradients, gradient_shap
from jaxdl.explain.gradients import explained_outputs, gradient_x_input, saliency
from jaxdl.explain.integrated import Gap, integrated_gradients
from jaxdl.explain.noise import smoothgrad
from jaxdl.explain.occlusion import occlusion
from jaxdl.explain.permutation import permutation_importance

__all__ = ["COMPLETE", "METHODS", "Explanation", "Gap", "attribute", "expected_gradients",
           "explained_outputs", "gradient_shap", "gradient_x_input", "integrated_gradients",
           "occlusion", "permutation_importance", "saliency", "smoothgrad"]
