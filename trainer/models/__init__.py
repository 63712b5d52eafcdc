"""The model zoo (``zoo``): a CIFAR-stem ResNet-18, the stock ResNet-18, a small CNN and
``fastcifar``; ``onepixel`` swaps 1x1 convolutions for matrix products on CPU."""
