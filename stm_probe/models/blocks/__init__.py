"""The five spatial token mixers (STMs) as interchangeable blocks of the unified backbone.

Contract every block class follows (so `UnifiedNet` can build any of them)::

    Block(dim, drop_path, layer_scale_init_value, input_resolution, stage, index, **stage_kwargs)
    block(x) -> x   # x: (B, C, H, W) float tensor, same shape out

- ``dim``: channels C of the stage; ``drop_path``: stochastic-depth rate of this block;
  ``layer_scale_init_value``: initial value of the layer-scale vectors (1e-6);
  ``input_resolution``: (H, W) of the stage's map at the build size (224 -> 56/28/14/7), used
  only for parameters whose shape depends on it (PVT position embedding) and cached masks;
  ``stage``: stage index 0..3; ``index``: block index within the stage.
- ``stage_kwargs``: the STM's own settings for this stage (``num_heads``, ``window_size``, ...).
- The forward must accept any H, W the backbone produces for inputs that are multiples of 32.
"""
