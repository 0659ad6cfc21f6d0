"""Export defaults the CLI shows in --help without importing the export
(torch) stage; export/config.py reads them from here so they live once."""

# ViT-B-32 trained on LAION-2B: MIT-licensed weights (a kiosk may ship them),
# strong on product-like photos, 512-d, and the size our speed target is set against.
DEFAULT_TEACHER = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
# ~1.5 M parameters: an int8 file well under 5 MB and a few ms per frame on 2 cores.
DEFAULT_STUDENT = "mobilenetv3_small_100"
