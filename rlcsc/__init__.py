"""RL-CSC: image super-resolution by residual learning and convolutional sparse coding.

Reproduction package for Zhang, Liu & Yu (2018). The library holds the MATLAB-exact image
operations (`imresize`, `color`, `crop`), the metrics (`metrics`, `ifc`), the data stages
(`rlcsc.data`) and the evaluation protocol (`evaluate`); `rlcsc.cli` is the single entry point.
"""

__version__ = "0.1.0"
