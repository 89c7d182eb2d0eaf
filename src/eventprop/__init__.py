"""eventprop: exact-gradient training of spiking neural networks with EventProp and loss shaping."""

__version__ = "0.1.0"
