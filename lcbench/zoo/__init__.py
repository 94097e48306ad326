"""The data and model zoo: data sets (digits, Fashion-MNIST, ImageNet folders, GLUE, WikiText, the
embedded text) and their loaders, models (timm, torchvision, transformers) and what reshapes them
(`architecture`, `residual`, `collapse`: LayerCollapse's folding math), and parameter and MAC counting
(`measure`). It may import `lcbench.core` only."""
