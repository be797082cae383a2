"""medseg-lab conditional GAN augmentation: mask -> image synthesis and synthetic datasets."""
