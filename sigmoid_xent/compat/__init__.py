"""Drop-in signatures: optax's, rax's and PyTorch's sigmoid losses, computed by sigmoid_xent.

Each submodule takes the peer's exact signature, defaults and broadcasting and returns the
peer's values (where the peer's are finite and accurate), with the library's stable values at
``±inf`` and its custom-VJP gradients. Changing the import is the whole migration::

    from sigmoid_xent.compat import optax   # optax.sigmoid_binary_cross_entropy(logits, labels)
    from sigmoid_xent.compat import rax     # rax.pointwise_sigmoid_loss(scores, labels, ...)
    from sigmoid_xent.compat import torch   # torch.binary_cross_entropy_with_logits(input, ...)

The modules are pure JAX: none of them imports optax, rax or torch.
"""

from sigmoid_xent.compat import optax, rax, torch

__all__ = ["optax", "rax", "torch"]
