"""Facts about the datasets this project uses, in one torch-free place: the offline toolkit, the
robot-side tools (bags, scoring, demo), synthetic test models and the benchmarks all read them here."""

CIFAR10_LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CAMVID_LABELS = ["sky", "building", "pole", "road", "pavement", "tree", "signsymbol", "fence", "car", "pedestrian",
                 "bicyclist"]
CAMVID_IGNORE = 11  # SegNet CamVid's "void" label: never scored
# The normalisation the CIFAR ResNet weights and torchvision backbones expect (0..1 pixel scale).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
