"""Networks: RL-CSC (the paper's model) and DRRN (its Table 4 comparison)."""
