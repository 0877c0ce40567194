"""The selector: finds the codes that carry one association and cuts the fewest that remove it.

Read in this order: `antisamples` (in `codecut.probes`) and `prefix` build the contrast,
`attribution` scores codes, `conditions` finds the subject's codes, `config` holds the options,
`search` tries cuts against the forget probe and the retain budget (`cache`, `memo`, `retain`),
and `unlearn` turns searches into a plan.
"""
