"""Token-level constants shared by the model, the data pipeline and evaluation (LLaVA-1.5 convention)."""

IGNORE_INDEX = -100          # label value the loss ignores
IMAGE_TOKEN_INDEX = -200     # one placeholder id per image in input_ids; the model expands it to image features
DEFAULT_IMAGE_TOKEN = "<image>"
DEFAULT_IMAGE_PATCH_TOKEN = "<im_patch>"
DEFAULT_IM_START_TOKEN = "<im_start>"
DEFAULT_IM_END_TOKEN = "<im_end>"
