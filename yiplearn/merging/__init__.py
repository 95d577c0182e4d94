"""Model merging: pytree arithmetic (`tree`), static merges (`static`), candidate sets
(`candidates`), entropy-adaptive online merging (`online`), AdaMerging (`adamerging`), Tent on the
mean merge (`tent`) and output ensembles (`ensemble`). Import the submodules directly."""
