"""Model file for TorchServe's stock image_classifier handler: AlexNet as torchvision defines it."""

from torchvision.models.alexnet import AlexNet as _TorchvisionAlexNet


class AlexNet(_TorchvisionAlexNet):
    pass
