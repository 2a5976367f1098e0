"""Where text comes from: ACLSum papers and summaries, Shakespeare's plays, plain passage files, and the installed
data packages that hold them. Training (hybrid.finetune), the evaluation suites and the consistency classifier all
read their data through here.
"""
