from jrnn.forward import forward as check_grads; GradCheckReport=None
