"""Networks: RL-CSC (the paper's model), DRRN (its Table 4 comparison) and VDSR (its predecessor, from its
authors' released weights: the protocol's check and Figures 4-6's comparison)."""
